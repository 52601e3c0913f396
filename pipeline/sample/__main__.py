import sys

from pipeline.sample.datasets import main

sys.exit(main())
