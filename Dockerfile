# Runs exactly the Makefile's steps (`make install`, then `make demo` / `make test`), so the two stay in sync.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN make install PYTHON=python3
# `docker run IMAGE` runs the quickstart demo; `docker run IMAGE make test` runs the tests.
CMD ["make", "demo"]
