// The HTTP side of docs/API.md: JSON in and out, one error shape, CSRF header on cookie writes.

import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.field = field;
  }

  /** A sentence for the user, in the current language. */
  describe() {
    const key = `error.${this.code}`;
    const text = t(key);
    return text === key ? t("error.generic", { code: this.code }) : text;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)tandtid_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** Whether this browser holds a session: the readable CSRF cookie is set and cleared with the session's. */
export function hasSession() {
  return csrfToken() !== "";
}

/** Fetch a JSON endpoint. Throws ApiError (code NETWORK when the server cannot be reached). */
export async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrfToken();
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    const error = new ApiError(0, "NETWORK", "network");
    error.describe = () => t("error.network");
    throw error;
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    const error = new ApiError(response.status, err.code || `HTTP_${response.status}`, err.message, err.field);
    error.bookings = err.bookings || []; // HAS_BOOKINGS: the bookings in the way
    throw error;
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body, headers) => api("POST", path, body ?? {}, headers);
export const del = (path) => api("DELETE", path);

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** A fresh Idempotency-Key, so a retried confirm never books twice. */
export function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
