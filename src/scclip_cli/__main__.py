from scclip_cli.cli.app import run

run()
