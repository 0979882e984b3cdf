from repro.report import main

raise SystemExit(main())
