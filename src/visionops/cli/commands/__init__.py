"""One module per ``visionops`` command: ``add_parser(subparsers)`` builds the command's
parser and sets its handler (``func``); the handler runs the command and returns its exit code.

``visionops.cli.parser.COMMANDS`` lists them, in the order ``visionops --help`` shows them.
"""
