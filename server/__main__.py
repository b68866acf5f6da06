"""``python -m server``: the same server as ``pgpt serve`` (:func:`server.app.main`)."""

import sys

from server.app import main

sys.exit(main())
