/* The playground's diff: what the answer changed in the input, word by word.
 *
 * Lines are matched first (a longest common subsequence over lines, so a long article stays
 * fast), then each run of changed lines is compared word by word, whitespace and
 * punctuation being words of their own: "Title" -> "# Title" is the insertion of "#" and
 * " ". A formatter that keeps the input's words shows insertions (markup) only.
 *
 *   PgptDiff.diff("Hello world", "# Hello *world*")
 *   // [{op: "ins", text: "# "}, {op: "same", text: "Hello "}, {op: "ins", text: "*"}, ...]
 */
(function (global) {
  "use strict";

  const MAX_CELLS = 4_000_000; // a changed run bigger than this is shown as deleted + inserted

  /** A longest common subsequence of ``a`` and ``b`` (arrays, compared by ``key``) as
   * [op, i, j] steps ("same": a[i] is b[j]; "del": a[i] only; "ins": b[j] only), or null
   * when the table would be too big. */
  function lcs(a, b, key = (x) => x) {
    const keysA = a.map(key);
    const keysB = b.map(key);
    let head = 0; // the common prefix and suffix need no table
    while (head < a.length && head < b.length && keysA[head] === keysB[head]) head++;
    let tail = 0;
    while (
      tail < a.length - head &&
      tail < b.length - head &&
      keysA[a.length - 1 - tail] === keysB[b.length - 1 - tail]
    )
      tail++;
    const n = a.length - head - tail;
    const m = b.length - head - tail;
    if ((n + 1) * (m + 1) > MAX_CELLS) return null;
    const width = m + 1;
    const table = new Uint32Array((n + 1) * width); // [i][j]: the LCS of a[head+i:] and b[head+j:]
    const same = (i, j) => keysA[head + i] === keysB[head + j];
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        table[i * width + j] = same(i, j)
          ? table[(i + 1) * width + j + 1] + 1
          : Math.max(table[(i + 1) * width + j], table[i * width + j + 1]);
      }
    }
    const steps = [];
    for (let k = 0; k < head; k++) steps.push(["same", k, k]);
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && same(i, j)) steps.push(["same", head + i++, head + j++]);
      else if (j < m && (i === n || table[i * width + j + 1] >= table[(i + 1) * width + j]))
        steps.push(["ins", head + i, head + j++]);
      else steps.push(["del", head + i++, head + j]);
    }
    for (let k = tail; k > 0; k--) steps.push(["same", a.length - k, b.length - k]);
    return steps;
  }

  /** Words, line breaks, other whitespace and single marks: every character in one token. */
  const tokens = (text) => text.match(/\n|[^\S\n]+|[\p{L}\p{N}_'’]+|[^\s\p{L}\p{N}_'’]/gu) || [];

  /** What a line says: its words, without markup or spacing (how lines are matched). */
  const wordsOf = (line) => (line.match(/[\p{L}\p{N}]+/gu) || []).join(" ");

  function push(ops, op, text) {
    if (!text) return;
    const last = ops.at(-1);
    if (last && last.op === op) last.text += text;
    else ops.push({ op, text });
  }

  /** The word diff of two texts (appended to ``ops``). */
  function diffWords(before, after, ops = []) {
    const a = tokens(before);
    const b = tokens(after);
    const steps = lcs(a, b);
    if (steps === null) {
      push(ops, "del", before);
      push(ops, "ins", after);
      return ops;
    }
    for (const [op, i, j] of steps) push(ops, op, op === "ins" ? b[j] : a[i]);
    return ops;
  }

  /** Lines with their line breaks ("a\nb" -> ["a\n", "b"]). */
  const linesOf = (text) => text.match(/[^\n]*\n|[^\n]+$/g) || [];

  /** The diff of ``after`` against ``before`` as [{op: "same" | "ins" | "del", text}]:
   * lines that say the same words are paired, then compared word by word. */
  function diff(before, after) {
    const a = linesOf(before);
    const b = linesOf(after);
    const steps = lcs(a, b, wordsOf);
    if (steps === null) return diffWords(before, after);
    const ops = [];
    let removed = "";
    let added = "";
    for (const [op, i, j] of steps) {
      if (op === "del") removed += a[i];
      else if (op === "ins") added += b[j];
      else {
        diffWords(removed, added, ops);
        removed = added = "";
        diffWords(a[i], b[j], ops);
      }
    }
    diffWords(removed, added, ops);
    return ops;
  }

  /** Non-whitespace tokens kept ("same"), inserted ("ins") and deleted ("del"). */
  function summary(ops) {
    const counts = { same: 0, ins: 0, del: 0 };
    for (const { op, text } of ops) counts[op] += tokens(text).filter((t) => /\S/.test(t)).length;
    return counts;
  }

  global.PgptDiff = { diff, diffWords, summary, tokens };
})(window);
