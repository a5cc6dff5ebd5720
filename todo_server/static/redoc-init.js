// Starts ReDoc on /redoc. A separate file, so the page's CSP needs no inline script.
window.addEventListener("load", function () {
  Redoc.init("/openapi.json", { disableSearch: false }, document.getElementById("redoc"));
});
