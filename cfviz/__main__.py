"""``python -m cfviz``: the ``cfviz`` command line, for launchers that start modules.

``accelerate launch -m cfviz evaluate ...`` starts this module in every process (see
:mod:`cfviz.evaluation.distributed`); ``python -m cfviz evaluate ...`` is ``cfviz evaluate ...``.
"""

import sys

from cfviz.cli import main

if __name__ == "__main__":
    sys.exit(main())
