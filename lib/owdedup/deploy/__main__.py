import sys

from owdedup.deploy.build import main

sys.exit(main())
