from bayeshf.cli import entry

entry()
