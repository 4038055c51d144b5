"""Infrastructure for ``chalice package``: the merge template (``render``) and the IAM evaluation the
permission tests use (``iam``)."""
