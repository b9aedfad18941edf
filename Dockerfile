# profilesync: one image for migrate / publisher / worker / doctor (the `profilesync` CLI is the entrypoint),
# plus a `dashboard` stage with rq-dashboard on the same RQ version.
FROM python:3.11-slim AS app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROFILESYNC_LOG_FORMAT=json

# A regular (non-editable) install from a build directory that is removed afterwards: the SQL migrations
# travel inside the package (profilesync.sql), nothing is read from a source tree at run time. The
# dependencies at the versions the test suite ran with (constraints.txt).
WORKDIR /build
COPY pyproject.toml README.md constraints.txt ./
COPY profilesync/ profilesync/
COPY sql/ sql/
RUN pip install -c constraints.txt . \
 && rm -rf /build \
 && useradd --system --uid 10001 --no-create-home profilesync
WORKDIR /app

USER profilesync
ENTRYPOINT ["profilesync"]
CMD ["doctor"]

# rq-dashboard 0.9.0 imports six without declaring it.
FROM app AS dashboard
USER root
RUN pip install "rq-dashboard==0.9.0" six
USER profilesync
EXPOSE 9181
ENTRYPOINT ["rq-dashboard"]
CMD ["--help"]
