"""`python -m clients.compare`."""

import sys

from clients.compare.driver import main

sys.exit(main())
