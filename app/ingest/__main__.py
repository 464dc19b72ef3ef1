from app.ingest.cli import app

app(prog_name="swapfleet ingest")
