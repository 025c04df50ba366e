FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY persistence persistence
COPY server server
COPY static static
RUN pip install --no-cache-dir .
ENV TANDTID_STATIC_DIR=/app/static TANDTID_DATA_DIR=/data TANDTID_HOST=0.0.0.0 TANDTID_PORT=8000
EXPOSE 8000
CMD ["tandtid", "serve", "--seed-if-empty"]
