"""faust glue (the only package that imports faust)."""
