// glob.h: doublestar-style glob patterns for GET /files/search.
//
// OpenSandbox's execd walks the directory and matches each non-directory entry's BASE NAME
// (not its relative path) against the pattern with doublestar semantics; an invalid pattern
// makes the route answer 500. This module is the matcher; the walk and the route live
// elsewhere and pass base names (sg_glob_match_base() strips a path for them).
//
// Syntax ('/' is the separator; a base name never contains one):
//   *        any run of non-'/' characters         ?      one non-'/' character (a UTF-8 rune)
//   [abc] [a-z] [!a] [^a]   one non-'/' character in / not in the class; '-' first or last is
//            literal, '\' escapes inside; "[]" and "[!]" are invalid (Go's rule: "[]a]" is bad)
//   {a,b}    alternatives, nested, commas at the top level of the braces split; "{,x}" allows
//            the empty alternative; ',' outside braces and '}' inside a class are literal
//   \c       the character c literally
//   **       a globstar only as a whole path component: "**" alone matches everything,
//            "**/" (at the start or after '/') matches the empty string or any prefix ending
//            in '/', so "**/*.txt" matches "a.txt"; "x/**" at the end matches "x", "x/" and
//            "x/anything". Anywhere else "**" is the same as "*" ("abc**" == "abc*").
// Consequences for base names: "**" (the route's default) matches every name; "src/*.py" can
// never match; "foo/**" matches the name "foo" (doublestar's trailing "/**" rule).
//
// Invalid (sg_glob_compile/validate fail with SG_EINVAL and a message that starts with Go's
// "syntax error in pattern"): unclosed '[', empty class, unclosed '{', unmatched '}', trailing
// '\'. Bounds (SG_ETOOBIG, also a pattern error for the route): pattern length, brace nesting
// depth, number of brace expansions and their total size.
//
// Cost: braces are expanded at compile time (bounded above), and each expansion is matched by
// a set-of-states simulation, O(tokens x name length) with no backtracking, so a pattern like
// "*a*a*a*a*a*b" against a long name is polynomial. Unlike Go's matcher, an invalid pattern is
// always reported, even when nothing would have been matched against it.
//
// Not supported: OpenSandbox's "!(...)" negation extension (a '!' outside a class is literal).
//
// Ownership: sg_glob_compile() allocates; sg_glob_free() frees. A compiled glob holds scratch
// space, so one glob must not be matched from two threads at once.
#ifndef SANDGATE_EXECD_GLOB_H
#define SANDGATE_EXECD_GLOB_H

#include <stddef.h>

#define SG_GLOB_MAX_PATTERN  4096  /* bytes of pattern */
#define SG_GLOB_MAX_DEPTH    32    /* brace nesting */
#define SG_GLOB_MAX_ALTS     1024  /* patterns after brace expansion */
#define SG_GLOB_MAX_EXPANDED 16384 /* total bytes of all expansions */

typedef struct sg_glob sg_glob_t;

/* Compiles pattern[0..len). On error returns SG_EINVAL (syntax) or SG_ETOOBIG (bounds), writes
 * a human message into msg (if msg_len > 0) and leaves *out NULL. */
int sg_glob_compile(const char *pattern, size_t len, sg_glob_t **out, char *msg, size_t msg_len);
void sg_glob_free(sg_glob_t *g); /* NULL is fine */

/* 1 if name[0..len) matches, 0 if not. */
int sg_glob_match(sg_glob_t *g, const char *name, size_t len);

/* Matches the part of the NUL-terminated path after its last '/' (a trailing '/' is ignored).*/
int sg_glob_match_base(sg_glob_t *g, const char *path);

/* Only checks the pattern: 0, or the error compile would give (with its message). */
int sg_glob_validate(const char *pattern, size_t len, char *msg, size_t msg_len);

/* One-shot: 1 match, 0 no match, negative = invalid pattern (message in msg). */
int sg_glob_match_once(const char *pattern, const char *name, char *msg, size_t msg_len);

#endif
