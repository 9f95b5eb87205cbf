"""``python -m asdesk.gui [PATH...]`` opens the workstation window."""

import sys

from asdesk.gui.app import main

sys.exit(main())
