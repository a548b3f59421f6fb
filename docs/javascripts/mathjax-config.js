// MathJax 2.7 configuration of the documentation site, read by assets/mathjax/MathJax.js (loaded next).
// pymdownx.arithmatex (generic mode) leaves every formula as \(...\) or \[...\] text inside an element
// of class "arithmatex"; tex2jax typesets those, and only those. Everything comes from the site itself: the combined
// configuration file (TeX input, HTML-CSS output, AMS packages) and the STIX web fonts shipped beside
// MathJax.js by the jupyter-server-mathjax package (docs/hooks/offline_math.py copies them in).
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  tex2jax: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    ignoreClass: ".*|",
    processClass: "arithmatex",
  },
  "HTML-CSS": {
    availableFonts: [],
    preferredFont: null,
    webFont: "STIX-Web",
    imageFont: null,
    linebreaks: { automatic: true },
    // MathJax 2 declares a probe font at about:blank, which current browsers refuse with a console
    // error; naming a local font that does not exist gives the same fallback without any request.
    styles: { "@font-face": { "font-family": "MathJax_Blank", src: "local('MathJax_Blank')" } },
  },
  // No quick preview pass (it probes fonts that are not shipped): the formulas appear once, typeset.
  "fast-preview": { disabled: true },
  showMathMenu: false,
  messageStyle: "none",
};
