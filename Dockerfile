# relay: OpenAI/Anthropic API over claude.ai web accounts.
# Build stage: install the project with the exact versions in constraints.txt into /install.
FROM python:3.12.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY relay ./relay
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt '.[speed]'

# Runtime stage: no build tools, no sources, no secrets; settings come from the environment.
FROM python:3.12.12-slim-bookworm
COPY --from=build /install /usr/local
# Hugging Face Spaces run containers as uid 1000; use the same everywhere. /data belongs to it so
# a volume mounted there (STATE_FILE=/data/relay-state.json) is writable.
RUN useradd --create-home --uid 1000 relay && mkdir /data && chown relay:relay /data
USER relay
WORKDIR /home/relay
ENV PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["python", "-m", "relay.healthcheck"]
CMD ["python", "-m", "relay"]
