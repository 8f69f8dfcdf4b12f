"""``python -m ragtrail.demo`` (what ``make demo`` runs). See :mod:`ragtrail.demo`."""

from ragtrail.demo import main

raise SystemExit(main())
