// MathJax reads this object when tex-chtml.js (served from assets/mathjax/) loads. pymdownx.arithmatex
// (generic mode) wraps every formula in an element of class "arithmatex" with \( \) or \[ \]
// delimiters: typeset those and nothing else, so code samples with $ signs are left alone.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*",
    processHtmlClass: "arithmatex",
  },
};
