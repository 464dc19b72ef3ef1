# The API image used by docker-compose.yml. The same image runs the other processes later
# (`swapfleet ingest`, ...) with a different command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/swapfleet
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY devices ./devices
COPY simulators ./simulators
RUN pip install . \
    && useradd --system --no-create-home swapfleet

USER swapfleet
EXPOSE 8000
CMD ["sh", "-c", "swapfleet db upgrade && swapfleet api --host 0.0.0.0"]
