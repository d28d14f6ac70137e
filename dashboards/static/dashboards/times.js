// Server-rendered times (<time datetime="…Z">, their text in UTC and named so) shown in the reader's local time
// with the zone named, in the device page's format (control.js localTime: toLocaleString with timeZoneName
// "short", whose defaults these are): one time format across the pages (issue 25).
(function () {
  "use strict";
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric",
    timeZoneName: "short",
  });
  for (const time of document.querySelectorAll("main time[datetime]")) {
    const at = new Date(time.dateTime);
    if (Number.isNaN(at.getTime())) continue;
    time.title = time.textContent; // the UTC text stays a pointer away
    time.textContent = format.format(at);
  }
})();
