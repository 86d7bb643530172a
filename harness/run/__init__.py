"""Running tests: the driver, one test in a child process, the SUT, progress, signals."""
