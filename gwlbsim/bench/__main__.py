import sys

from gwlbsim.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))  # the gwlbsim command's handling of signals and errors
