/* The playground's Markdown renderer: CommonMark's everyday subset, small enough to read.
 *
 * Blocks: ATX and setext headings, paragraphs, bullet and ordered lists (nested by
 * indentation), fenced and indented code, block quotes, thematic breaks and GFM pipe tables.
 * Inline: code spans, backslash escapes, links (images become links: the page fetches
 * nothing), <autolinks>, **strong**, *emphasis*, ~~strikethrough~~ and hard line breaks.
 *
 * Every character of the input is escaped: the only HTML in the output is the renderer's
 * own, and a link keeps only an http(s), mailto, relative or #fragment address.
 *
 *   PgptMarkdown.render("## Hi *there*") === "<h2>Hi <em>there</em></h2>\n"
 */
(function (global) {
  "use strict";

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ESCAPES[c]);

  // --- inline ---------------------------------------------------------------------------

  const HOLE = /\uE000(\d+)\uE001/g; // a finished piece of HTML, kept out of later passes
  const PUNCTUATION = "!\"#$%&'()*+,\\-./:;<=>?@[\\]^_`{|}~";
  const ESCAPED = new RegExp(`\\\\([${PUNCTUATION}])`, "g");

  /** The address of a link, or null for a scheme that could run code (javascript:, data:). */
  function safeUrl(url) {
    const trimmed = url.trim();
    if (/^[a-z][a-z0-9+.-]*:/i.test(trimmed) && !/^(https?|mailto):/i.test(trimmed)) {
      return null;
    }
    return trimmed;
  }

  /** A link (or, for an unsafe address, just its text); ``html``: the text, already HTML. */
  function link(html, url, title) {
    const href = safeUrl(url);
    if (href === null) return html;
    const titled = title ? ` title="${escapeHtml(title)}"` : "";
    return `<a href="${escapeHtml(href)}"${titled} rel="noopener noreferrer" target="_blank">${html}</a>`;
  }

  // emphasis, strongest first; ``edge``: the pattern's first group is the text before it
  const SPANS = [
    { pattern: /\*\*\*(?=\S)([\s\S]*?\S)\*\*\*/g, open: "<strong><em>", close: "</em></strong>" },
    { pattern: /\*\*(?=\S)([\s\S]*?\S)\*\*/g, open: "<strong>", close: "</strong>" },
    {
      pattern: /(^|[^\p{L}\p{N}_])__(?=\S)([\s\S]*?\S)__(?![\p{L}\p{N}_])/gu,
      open: "<strong>",
      close: "</strong>",
      edge: true,
    },
    { pattern: /\*(?=[^\s*])([\s\S]*?[^\s*])\*/g, open: "<em>", close: "</em>" },
    {
      pattern: /(^|[^\p{L}\p{N}_])_(?=\S)([\s\S]*?\S)_(?![\p{L}\p{N}_])/gu,
      open: "<em>",
      close: "</em>",
      edge: true,
    },
    { pattern: /~~(?=\S)([\s\S]*?\S)~~/g, open: "<del>", close: "</del>" },
  ];

  /** Inline Markdown of one block's text as HTML (``holes``: the outer call's, for a link's text). */
  function inline(source, holes) {
    const top = holes === undefined;
    const held = top ? [] : holes;
    const hold = (html) => `\uE000${held.push(html) - 1}\uE001`;
    let text = top ? source.replace(/[\uE000\uE001]/g, "\uFFFD") : source;
    // code spans first: nothing inside them is markup
    text = text.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, ticks, code) => {
      const body = /^ [\s\S]* $/.test(code) && code.trim() ? code.slice(1, -1) : code;
      return hold(`<code>${escapeHtml(body.replace(/\n/g, " "))}</code>`);
    });
    text = text.replace(/(?: {2,}|\\)\n/g, () => hold("<br>\n"));
    text = text.replace(ESCAPED, (_, char) => hold(escapeHtml(char)));
    text = text.replace(/<((?:https?|mailto):[^\s<>]+)>/gi, (_, url) =>
      hold(link(escapeHtml(url), url)),
    );
    // links and images: [text](url "title"); an image is shown as a link to it
    text = text.replace(
      /(!?)\[((?:[^[\]]|\[[^[\]]*\])*)\]\(\s*<?([^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)>?(?:\s+"([^"]*)")?\s*\)/g,
      (_, bang, label, url, title) =>
        hold(link(inline(bang ? `🖼 ${label || url}` : label, held), url, title)),
    );
    text = escapeHtml(text);
    for (const { pattern, open, close, edge } of SPANS) {
      text = text.replace(pattern, (...match) =>
        edge ? `${match[1]}${open}${match[2]}${close}` : `${open}${match[1]}${close}`,
      );
    }
    if (!top) return text;
    // holes may hold holes (a link's text): fill until none is left
    while (/\uE000\d+\uE001/.test(text)) {
      text = text.replace(HOLE, (_, i) => held[Number(i)]);
    }
    return text;
  }

  // --- blocks ---------------------------------------------------------------------------

  const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?/;
  const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
  const SETEXT = /^ {0,3}(=+|-+)[ \t]*$/;
  const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
  const BLANK = /^[ \t]*$/;

  const indentOf = (line) => line.match(/^ */)[0].length;
  const expandTabs = (line) => line.replace(/^\t+/, (tabs) => "    ".repeat(tabs.length));

  /** The cells of a table row (split at unescaped pipes, outer pipes dropped). */
  function cells(row) {
    let text = row.trim();
    if (text.startsWith("|")) text = text.slice(1);
    if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
    return text.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
  }

  function isTableStart(lines, i) {
    return (
      lines[i].includes("|") &&
      i + 1 < lines.length &&
      TABLE_RULE.test(lines[i + 1]) &&
      lines[i + 1].includes("-") &&
      cells(lines[i]).length === cells(lines[i + 1]).length
    );
  }

  /** Does ``line`` begin a block that ends a paragraph? */
  function interrupts(lines, i) {
    const line = lines[i];
    const item = line.match(ITEM);
    return (
      FENCE.test(line) ||
      HEADING.test(line) ||
      RULE.test(line) ||
      QUOTE.test(line) ||
      isTableStart(lines, i) ||
      Boolean(item && item[4] && (/^[-*+]$/.test(item[2]) || /^1[.)]$/.test(item[2])))
    );
  }

  function table(lines, i, out) {
    const aligns = cells(lines[i + 1]).map((rule) => {
      if (rule.startsWith(":") && rule.endsWith(":")) return ' class="align-center"';
      if (rule.endsWith(":")) return ' class="align-right"';
      return rule.startsWith(":") ? ' class="align-left"' : "";
    });
    const row = (line, tag) => {
      const found = cells(line);
      const html = aligns.map((align, k) => `<${tag}${align}>${inline(found[k] || "")}</${tag}>`);
      return `<tr>${html.join("")}</tr>`;
    };
    const body = [];
    let j = i + 2;
    for (; j < lines.length && !BLANK.test(lines[j]) && lines[j].includes("|"); j++) {
      body.push(row(lines[j], "td"));
    }
    const tbody = body.length ? `<tbody>${body.join("")}</tbody>` : "";
    out.push(`<table><thead>${row(lines[i], "th")}</thead>${tbody}</table>`);
    return j;
  }

  function list(lines, i, out) {
    const first = lines[i].match(ITEM);
    const ordered = /\d/.test(first[2]);
    const delimiter = first[2].slice(-1);
    const items = [];
    let loose = false;
    let j = i;
    const sameList = (line) => {
      const item = line.match(ITEM);
      return Boolean(item) && !RULE.test(line) && /\d/.test(item[2]) === ordered &&
        item[2].slice(-1) === delimiter;
    };
    while (j < lines.length && sameList(lines[j])) {
      const item = lines[j].match(ITEM);
      const content = item[1].length + item[2].length + Math.min((item[3] || " ").length, 4);
      const body = [item[4] || ""];
      j++;
      while (j < lines.length) {
        if (BLANK.test(lines[j])) {
          const next = lines.slice(j).findIndex((line) => !BLANK.test(line));
          if (next < 0 || indentOf(lines[j + next]) < content) break;
          body.push("");
          j++;
        } else if (indentOf(lines[j]) >= content) {
          body.push(lines[j].slice(content));
          j++;
        } else if (!interrupts(lines, j) && !ITEM.test(lines[j]) && !BLANK.test(body.at(-1))) {
          body.push(lines[j].trim()); // a lazy continuation of the item's paragraph
          j++;
        } else {
          break;
        }
      }
      let blank = 0;
      while (j + blank < lines.length && BLANK.test(lines[j + blank])) blank++;
      const more = j + blank < lines.length && sameList(lines[j + blank]);
      if (blank && more) loose = true;
      if (body.slice(1).some((line, k) => BLANK.test(line) && k + 2 < body.length)) loose = true;
      items.push(body);
      if (!more) break;
      j += blank;
    }
    const start = ordered ? Number.parseInt(first[2], 10) : 1;
    const open = ordered ? (start !== 1 ? `<ol start="${start}">` : "<ol>") : "<ul>";
    const html = items.map((body) => {
      let inner = blocks(body);
      if (!loose) inner = inner.replace(/<p>([\s\S]*?)<\/p>/g, "$1");
      return `<li>${inner.trim()}</li>`;
    });
    out.push(`${open}\n${html.join("\n")}\n${ordered ? "</ol>" : "</ul>"}`);
    return j;
  }

  /** Block Markdown (an array of lines) as HTML. */
  function blocks(lines) {
    const out = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (BLANK.test(line)) {
        i++;
        continue;
      }
      const fence = line.match(FENCE);
      if (fence) {
        const indent = indentOf(line);
        const code = [];
        const close = new RegExp(`^ {0,3}${fence[1][0]}{${fence[1].length},}[ \\t]*$`);
        for (i++; i < lines.length && !close.test(lines[i]); i++) {
          code.push(lines[i].replace(new RegExp(`^ {0,${indent}}`), ""));
        }
        i++;
        const language = fence[2] ? ` class="language-${escapeHtml(fence[2])}"` : "";
        const body = code.length ? `${escapeHtml(code.join("\n"))}\n` : "";
        out.push(`<pre><code${language}>${body}</code></pre>`);
        continue;
      }
      if (indentOf(line) >= 4) {
        const code = [];
        while (i < lines.length && (indentOf(lines[i]) >= 4 || BLANK.test(lines[i]))) {
          code.push(lines[i].slice(4));
          i++;
        }
        while (code.length && BLANK.test(code.at(-1))) code.pop();
        out.push(`<pre><code>${escapeHtml(code.join("\n"))}\n</code></pre>`);
        continue;
      }
      const heading = line.match(HEADING);
      if (heading) {
        const level = heading[1].length;
        out.push(`<h${level}>${inline(heading[2] || "")}</h${level}>`);
        i++;
        continue;
      }
      if (RULE.test(line)) {
        out.push("<hr>");
        i++;
        continue;
      }
      if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && !BLANK.test(lines[i])) {
          if (QUOTE.test(lines[i])) quoted.push(lines[i].replace(QUOTE, ""));
          else if (!interrupts(lines, i)) quoted.push(lines[i]); // lazy continuation
          else break;
          i++;
        }
        out.push(`<blockquote>\n${blocks(quoted)}</blockquote>`);
        continue;
      }
      if (isTableStart(lines, i)) {
        i = table(lines, i, out);
        continue;
      }
      if (ITEM.test(line)) {
        i = list(lines, i, out);
        continue;
      }
      const paragraph = [line.trimStart()];
      for (i++; i < lines.length && !BLANK.test(lines[i]); i++) {
        const setext = lines[i].match(SETEXT);
        if (setext) {
          const level = setext[1][0] === "=" ? 1 : 2;
          out.push(`<h${level}>${inline(paragraph.join("\n"))}</h${level}>`);
          paragraph.length = 0;
          i++;
          break;
        }
        if (interrupts(lines, i)) break;
        paragraph.push(lines[i].trimStart());
      }
      if (paragraph.length) out.push(`<p>${inline(paragraph.join("\n").trimEnd())}</p>`);
    }
    return out.length ? `${out.join("\n")}\n` : "";
  }

  /** Markdown text as HTML (safe to assign to innerHTML). */
  function render(markdown) {
    const lines = String(markdown).replace(/\r\n?/g, "\n").split("\n").map(expandTabs);
    return blocks(lines);
  }

  global.PgptMarkdown = { render, inline, escapeHtml };
})(window);
