from gridex.cli import app

app(prog_name="gridex")
