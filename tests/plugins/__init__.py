"""Plug-in distributions used by the learner contract tests (installed into a tmp dir)."""
