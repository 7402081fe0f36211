from chinwag.cli import app

app(prog_name="chinwag")
