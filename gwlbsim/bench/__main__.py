import sys

from gwlbsim.bench.cli import main

sys.exit(main())
