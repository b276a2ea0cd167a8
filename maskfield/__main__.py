import sys

from maskfield.cli import main

sys.exit(main())
