/* The lite clients' JSON (lite.h): the flat objects the server and the workspace daemon send. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lite.h"

static const char* skip_ws(const char* p, const char* end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
  return p;
}
static void put_utf8(Buf* out, uint32_t cp) {
  char c[4];
  if (cp < 0x80) c[0] = (char)cp, buf_put(out, c, 1);
  else if (cp < 0x800) c[0] = (char)(0xC0 | cp >> 6), c[1] = (char)(0x80 | (cp & 0x3F)), buf_put(out, c, 2);
  else if (cp < 0x10000)
    c[0] = (char)(0xE0 | cp >> 12), c[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), c[2] = (char)(0x80 | (cp & 0x3F)),
    buf_put(out, c, 3);
  else
    c[0] = (char)(0xF0 | cp >> 18), c[1] = (char)(0x80 | ((cp >> 12) & 0x3F)), c[2] = (char)(0x80 | ((cp >> 6) & 0x3F)),
    c[3] = (char)(0x80 | (cp & 0x3F)), buf_put(out, c, 4);
}
static int hex4(const char* p, const char* end, uint32_t* v) {
  if (end - p < 4) return 0;
  *v = 0;
  for (int i = 0; i < 4; ++i) {
    char c = p[i];
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') *v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') *v |= (uint32_t)(c - 'A' + 10);
    else return 0;
  }
  return 1;
}
/* A JSON string at *pp (past its opening quote), decoded into out; 0 if malformed. */
static int json_string(const char** pp, const char* end, Buf* out) {
  const char* p = *pp;
  buf_put(out, "", 0);
  while (p < end && *p != '"') {
    if (*p != '\\') {
      buf_put(out, p++, 1);
      continue;
    }
    if (++p >= end) return 0;
    char e = *p++;
    switch (e) {
      case '"': case '\\': case '/': buf_put(out, &e, 1); break;
      case 'b': buf_put(out, "\b", 1); break;
      case 'f': buf_put(out, "\f", 1); break;
      case 'n': buf_put(out, "\n", 1); break;
      case 'r': buf_put(out, "\r", 1); break;
      case 't': buf_put(out, "\t", 1); break;
      case 'u': {
        uint32_t cp, lo;
        if (!hex4(p, end, &cp)) return 0;
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, end, &lo) &&
            lo >= 0xDC00 && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
        put_utf8(out, cp);
        break;
      }
      default: return 0;
    }
  }
  if (p >= end) return 0;
  *pp = p + 1;
  return 1;
}
/* Finds member `key` of a flat object: a string value decoded into *str (then *raw = NULL), any
 * other value as its raw text [*raw, *raw + *raw_n). 0 if absent or malformed. */
static int json_member(const char* p, size_t n, const char* key, Buf* str, const char** raw, size_t* raw_n) {
  const char* end = p + n;
  p = skip_ws(p, end);
  if (p >= end || *p++ != '{') return 0;
  for (;;) {
    p = skip_ws(p, end);
    if (p >= end || *p++ != '"') return 0;
    Buf k = {0};
    if (!json_string(&p, end, &k)) return free(k.p), 0;
    int match = strcmp(buf_cstr(&k), key) == 0;
    free(k.p);
    p = skip_ws(p, end);
    if (p >= end || *p++ != ':') return 0;
    p = skip_ws(p, end);
    if (p >= end) return 0;
    if (*p == '"') {
      ++p;
      Buf v = {0};
      if (!json_string(&p, end, &v)) return free(v.p), 0;
      if (match) {
        buf_clear(str);
        buf_put(str, buf_cstr(&v), v.n);
        free(v.p);
        *raw = NULL;
        return 1;
      }
      free(v.p);
    } else if (*p == '{' || *p == '[') {
      return 0; /* nested values: not in the events this client reads */
    } else {
      const char* start = p;
      while (p < end && *p != ',' && *p != '}' && *p != ' ' && *p != '\n') ++p;
      if (match) {
        *raw = start;
        *raw_n = (size_t)(p - start);
        return 1;
      }
    }
    p = skip_ws(p, end);
    if (p < end && *p == ',') {
      ++p;
      continue;
    }
    return 0;
  }
}
int json_string_member(const char* p, size_t n, const char* key, Buf* out) {
  const char* raw = NULL;
  size_t raw_n = 0;
  return json_member(p, n, key, out, &raw, &raw_n) && raw == NULL;
}
/* The raw text of a member that is not a string, copied into tmp; 0 if absent, a string, or too long. */
static int raw_member(const char* p, size_t n, const char* key, char* tmp, size_t tmp_size) {
  Buf ignored = {0};
  const char* raw = NULL;
  size_t raw_n = 0;
  int found = json_member(p, n, key, &ignored, &raw, &raw_n);
  free(ignored.p);
  if (!found || !raw || raw_n == 0 || raw_n >= tmp_size) return 0;
  memcpy(tmp, raw, raw_n);
  tmp[raw_n] = 0;
  return 1;
}
long json_int_member(const char* p, size_t n, const char* key) {
  char tmp[24], *stop;
  if (!raw_member(p, n, key, tmp, sizeof(tmp))) return 0;
  long v = strtol(tmp, &stop, 10);
  return *stop == 0 ? v : 0;
}
int json_bool_member(const char* p, size_t n, const char* key) {
  char tmp[8];
  return raw_member(p, n, key, tmp, sizeof(tmp)) && strcmp(tmp, "true") == 0;
}
void json_quote(Buf* out, const char* s) {
  buf_put(out, "\"", 1);
  for (const char* t = s; *t; ++t) {
    unsigned char c = (unsigned char)*t;
    if (c == '"' || c == '\\') {
      buf_put(out, "\\", 1);
      buf_put(out, t, 1);
    } else if (c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      buf_str(out, esc);
    } else {
      buf_put(out, t, 1);
    }
  }
  buf_put(out, "\"", 1);
}

