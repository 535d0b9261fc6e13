from rtaudio.cli import main

raise SystemExit(main())
