"""One module per export target: ``export(ctx, out) -> TargetResult`` and, for targets that run
here, ``open_engine(bundle, threads) -> GraphEngine``."""
