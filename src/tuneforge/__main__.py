"""`python -m tuneforge ...` is the same as the `tuneforge` command.

>>> # python -m tuneforge config classification
"""

import sys

from tuneforge.cli import main

sys.exit(main())
