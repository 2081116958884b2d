(function () {
  "use strict";

  function drawCharts() {
    var holder = document.getElementById("sf-charts");
    if (!holder || typeof Plotly === "undefined") { return; }
    var charts = JSON.parse(holder.textContent);
    var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    charts.forEach(function (chart) {
      var element = document.getElementById(chart.id);
      if (element) { Plotly.newPlot(element, chart.figure.data, chart.figure.layout, config); }
    });
  }

  function resizeCharts() {
    if (typeof Plotly === "undefined") { return; }
    document.querySelectorAll(".chart.js-plotly-plot").forEach(function (element) {
      Plotly.Plots.resize(element);
    });
  }

  function showPane(button) {
    var policy = button.closest(".policy");
    policy.querySelectorAll(".tab").forEach(function (tab) { tab.classList.toggle("active", tab === button); });
    policy.querySelectorAll(".pane").forEach(function (pane) {
      pane.classList.toggle("active", pane.id === button.dataset.pane);
    });
  }

  function copySelection(pane) {
    // Clipboard API is unavailable on some file:// pages; selecting the text lets the user copy by hand.
    var range = document.createRange();
    range.selectNodeContents(pane);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { return document.execCommand("copy"); } catch (error) { return false; }
  }

  function copyPane(button) {
    var pane = button.closest(".policy").querySelector(".pane.active");
    if (!pane) { return; }
    var done = function () {
      button.classList.add("done");
      button.textContent = "Copied";
      setTimeout(function () { button.classList.remove("done"); button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(pane.textContent).then(done, function () { if (copySelection(pane)) { done(); } });
    } else if (copySelection(pane)) {
      done();
    }
  }

  document.addEventListener("click", function (event) {
    var tab = event.target.closest(".tab");
    if (tab) { showPane(tab); return; }
    var copy = event.target.closest(".copy");
    if (copy) { copyPane(copy); }
  });
  window.addEventListener("beforeprint", resizeCharts);
  window.addEventListener("afterprint", resizeCharts);
  drawCharts();
})();
