// Tests that train models share the two cores; running them in parallel only slows each down.
[assembly: DoNotParallelize]
