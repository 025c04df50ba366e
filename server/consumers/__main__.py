"""``python -m server.consumers``: the consumers' own process, as ``tandtid serve`` runs it
(``server.consumers.process``)."""

import sys

from server.consumers.process import main

sys.exit(main())
