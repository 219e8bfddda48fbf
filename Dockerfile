# The dunlink image: every process (api, worker, beat, sandbox, flower, migrations) runs from it.
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY domain ./domain
COPY adapters ./adapters
COPY workers ./workers
COPY platforms ./platforms
COPY dunlink ./dunlink
COPY templates ./templates
# The locked versions of what dunlink needs at run time (requirements.lock holds nothing else).
RUN pip install -c requirements.lock . && useradd --system --home /app dunlink && mkdir -p /app/var && chown dunlink /app/var
USER dunlink
EXPOSE 8000 8090 5555
ENTRYPOINT ["dunlink"]
CMD ["--help"]
