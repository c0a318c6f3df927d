(() => {
  const dialog = document.getElementById('enlarged');
  let picture = null;  // made on the first click: no <img> without a picture in the page
  let opener = null;
  document.addEventListener('click', event => {
    const link = event.target.closest('a.enlarge');
    if (!link) return;
    event.preventDefault();
    opener = link;
    if (!picture) {
      picture = document.createElement('img');
      picture.setAttribute('style', dialog.querySelector('.picture').dataset.style);
      dialog.querySelector('.picture').appendChild(picture);
    }
    picture.src = link.getAttribute('href');
    picture.alt = 'variance matrices of ' + link.dataset.mid + ' at full size';
    picture.dataset.mid = link.dataset.mid;
    dialog.querySelector('.title').textContent = link.dataset.mid + ': variance matrices '
      + 'at full size';
    dialog.showModal();
    dialog.querySelector('button').focus();
  });
  dialog.addEventListener('click', event => { if (event.target === dialog) dialog.close(); });
  dialog.addEventListener('close', () => { if (opener) opener.focus(); });
  // the gallery's filter: all cards, or the variant, invariant or disagreeing ones
  const gallery = document.querySelector('.gallery');
  const buttons = document.querySelectorAll('.filter button');
  const show = key => {
    gallery.dataset.show = key;
    buttons.forEach(b => b.setAttribute('aria-pressed', String(b.dataset.show === key)));
  };
  buttons.forEach(b => b.addEventListener('click', () => show(b.dataset.show)));
  // a link to a card the filter hides shows every card again
  window.addEventListener('hashchange', () => {
    const card = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (card && card.classList.contains('card') && card.offsetParent === null) {
      show('all');
      card.scrollIntoView();
    }
  });
})();
