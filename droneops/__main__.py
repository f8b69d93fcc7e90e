from droneops.cli import main

raise SystemExit(main())
