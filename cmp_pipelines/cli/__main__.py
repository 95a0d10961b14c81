import sys

from cmp_pipelines.cli.main import main

sys.exit(main())
