import sys

from reader.check.cli import main

sys.exit(main())
