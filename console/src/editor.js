// CodeMirror 6 for configs: JSON highlighting, syntax errors marked inline as the designer types,
// and a side-by-side view of the stored config and the edit before saving.
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { json, jsonParseLinter } from "@codemirror/lang-json";
import { bracketMatching, defaultHighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { lintGutter, linter } from "@codemirror/lint";
import { MergeView } from "@codemirror/merge";
import { EditorState } from "@codemirror/state";
import { EditorView, keymap, lineNumbers } from "@codemirror/view";
import { html } from "htm/preact";
import { useEffect, useRef } from "preact/hooks";

const theme = EditorView.theme({
  "&": { fontSize: "14px", border: "1px solid #8a8f98", borderRadius: "4px", background: "#fff" },
  "&.cm-focused": { outline: "3px solid #1f6feb", outlineOffset: "1px" },
  ".cm-scroller": { fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace", minHeight: "8em", maxHeight: "28em" },
});

function extensions(label, readOnly) {
  return [
    lineNumbers(),
    history(),
    bracketMatching(),
    syntaxHighlighting(defaultHighlightStyle),
    json(),
    // Escape then Tab leaves the editor, so keyboard users are never trapped in it.
    keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
    EditorView.contentAttributes.of({ "aria-label": label }),
    EditorState.readOnly.of(readOnly),
    EditorView.editable.of(!readOnly),
    theme,
  ];
}

/**
 * A JSON editor; `onChange` gets the text after every edit. The editor owns its text while the
 * designer types: `value` replaces it only when `revision` changes (a reload, a discard). Following
 * `value` on every render would replay stale renders into the editor while keys arrive faster than
 * renders, and the two would overwrite each other forever.
 */
export function JsonEditor({ value, revision, onChange, label, testId }) {
  const host = useRef(null);
  const view = useRef(null);
  const changed = useRef(onChange);
  changed.current = onChange;
  // Set while the page replaces the text: that is no edit of the designer's to report.
  const replacing = useRef(false);
  useEffect(() => {
    view.current = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: value,
        extensions: [
          ...extensions(label, false),
          linter(jsonParseLinter(), { delay: 150 }),
          lintGutter(),
          EditorView.updateListener.of((update) => {
            if (update.docChanged && !replacing.current) changed.current(update.state.doc.toString());
          }),
        ],
      }),
    });
    return () => view.current.destroy();
  }, []);
  useEffect(() => {
    const current = view.current;
    if (current && current.state.doc.toString() !== value) {
      replacing.current = true;
      try {
        current.dispatch({ changes: { from: 0, to: current.state.doc.length, insert: value } });
      } finally {
        replacing.current = false;
      }
    }
  }, [revision]);
  return html`<div class="json-editor" data-testid=${testId} ref=${host}></div>`;
}

/** The stored config (left) against the edit (right), read-only, changes highlighted. */
export function JsonDiff({ stored, edited }) {
  const host = useRef(null);
  useEffect(() => {
    const view = new MergeView({
      parent: host.current,
      a: { doc: stored, extensions: extensions("Stored config", true) },
      b: { doc: edited, extensions: extensions("Your edit", true) },
      collapseUnchanged: { margin: 3, minSize: 6 },
    });
    return () => view.destroy();
  }, [stored, edited]);
  return html`<div class="json-diff">
    <div class="diff-headings" aria-hidden="true"><span>Stored</span><span>Your edit</span></div>
    <div ref=${host}></div>
  </div>`;
}
