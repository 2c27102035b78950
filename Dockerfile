# relay: OpenAI/Anthropic API over claude.ai web accounts.
# Build stage: install the project and its pinned-minimum dependencies into /install.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip install --no-cache-dir --prefix=/install .

# Runtime stage: no build tools, no sources, no secrets; settings come from the environment.
FROM python:3.12-slim
COPY --from=build /install /usr/local
# Hugging Face Spaces run containers as uid 1000; use the same everywhere.
RUN useradd --create-home --uid 1000 relay
USER relay
WORKDIR /home/relay
ENV PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["python", "-m", "relay.healthcheck"]
CMD ["python", "-m", "relay"]
