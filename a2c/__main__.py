from a2c.cli import main
import sys
sys.exit(main())
