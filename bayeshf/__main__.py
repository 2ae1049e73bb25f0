import sys

from bayeshf.cli import main

sys.exit(main())
