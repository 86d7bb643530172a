import sys

from harness.cli import main

if __name__ == "__main__":  # engines that spawn processes (vLLM) re-import __main__
    sys.exit(main())
