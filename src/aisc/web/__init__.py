"""The web portal: server-rendered pages for applicants, reviewers, operators and the funder.

Pages call the same services as the API; this package only reads forms, calls a service and
renders a template.
"""
