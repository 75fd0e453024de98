using Microsoft.ML.ModelMerging.Cli;

return MlmergeCommand.Run(args);
