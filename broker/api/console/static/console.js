// Progressive enhancement only: every page works without it.
import { initAll } from '/static/govuk-frontend.min.js'

document.body.classList.add('js-enabled', 'govuk-frontend-supported')
initAll()

// Live countdowns. A deadline is rendered as <time datetime="…" data-countdown>…</time> holding its UTC stamp, which
// is all a browser without scripts shows; here a note beside it counts down to it every second. The note is not a
// live region: a screen reader reads it when it reaches it, without being interrupted every second.
function countdownText (ms) {
  if (ms <= 0) return 'passed: the next tier or the decisive default takes over'
  const s = Math.floor(ms / 1000)
  const d = Math.floor(s / 86400)
  const h = Math.floor((s % 86400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  const parts = [...(d > 0 ? [`${d} d`] : []), ...(d > 0 || h > 0 ? [`${h} h`] : []), `${m} min`, `${s % 60} s`]
  return `${parts.join(' ')} left`
}

function tickCountdowns () {
  for (const time of document.querySelectorAll('time[data-countdown]')) {
    const at = Date.parse(time.getAttribute('datetime'))
    if (Number.isNaN(at)) continue
    let note = time.nextElementSibling
    if (!note || !note.classList.contains('accord-countdown')) {
      note = document.createElement('span')
      note.className = 'accord-countdown govuk-!-font-weight-bold'
      time.after(note)
    }
    note.textContent = ` (${countdownText(at - Date.now())})`
  }
}

tickCountdowns()
setInterval(tickCountdowns, 1000)
