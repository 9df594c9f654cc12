import sys

from roost_agent.cli import main

sys.exit(main())
