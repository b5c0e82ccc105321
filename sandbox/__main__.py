import sys

from sandbox._cli import main

sys.exit(main())
