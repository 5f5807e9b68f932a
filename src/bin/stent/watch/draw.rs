//! How the dashboard looks: one frame from the `App`'s state.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;
use stent::ExecutionState;

use super::app::{App, Panel};
use crate::{human, views};

pub(crate) fn draw(frame: &mut Frame, app: &App) {
    let [header, top, running, lists, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let s = &app.snapshot;
    let holder = match s.held_by {
        Some(pid) => format!("live: application pid {pid}"),
        None => "no application holds the file".to_string(),
    };
    let taken = if s.taken_ms > 0 { views::time(s.taken_ms) } else { "reading...".into() };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("stent watch ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}  ·  {holder}  ·  {taken}", app.db)),
        ])),
        header,
    );

    let [counts, rate] = Layout::horizontal([Constraint::Length(34), Constraint::Min(20)]).areas(top);
    let mut lines: Vec<Line> = ExecutionState::ALL
        .iter()
        .map(|state| {
            Line::from(vec![
                Span::styled(format!("{:<13}", state.as_str()), style_of(*state)),
                Span::raw(format!("{:>7}", s.count(*state))),
            ])
        })
        .collect();
    lines.push(Line::from(format!("{:<13}{:>7}", "dead letters", s.dead_letters)));
    let queues: Vec<String> = s.queues.iter().map(|(q, n)| format!("{q} {n}")).collect();
    lines.push(Line::from(format!("{:<13}{}", "ready", queues.join(", "))));
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" executions ")), counts);
    let samples: Vec<u64> = app.throughput.iter().copied().collect();
    let now = samples.last().copied().unwrap_or(0);
    let peak = samples.iter().copied().max().unwrap_or(0);
    let width = rate.width.saturating_sub(2) as usize;
    let shown = &samples[samples.len().saturating_sub(width)..];
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" finished/s: {now} now, {peak} peak ")))
            .data(shown)
            .style(Style::new().fg(Color::Green)),
        rate,
    );

    let rows: Vec<Row> = s
        .running
        .iter()
        .map(|t| {
            Row::new(vec![
                t.task_id.to_string(),
                t.execution_id.to_string(),
                t.function.clone(),
                t.worker.clone(),
                t.attempt.to_string(),
                human::ago(t.lease_expires_ms),
            ])
        })
        .collect();
    let widths = [6, 9, 18, 16, 7, 12].map(Constraint::Length);
    frame.render_widget(
        Table::new(rows, widths)
            .header(header_row(&["TASK", "EXECUTION", "FUNCTION", "WORKER", "ATTEMPT", "LEASE ENDS"]))
            .block(Block::bordered().title(format!(" running tasks: {} ", s.running.len()))),
        running,
    );

    let [executions, letters] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(lists);
    let rows: Vec<Row> = s
        .recent
        .iter()
        .map(|e| {
            Row::new(vec![
                Cell::from(e.id.to_string()),
                Cell::from(e.function.clone()),
                Cell::from(Span::styled(e.state.as_str(), style_of(e.state))),
                Cell::from(human::ago(e.created_ms)),
            ])
        })
        .collect();
    let mut state = TableState::default().with_selected(app.selected_execution);
    frame.render_stateful_widget(
        Table::new(rows, [Constraint::Length(7), Constraint::Min(10), Constraint::Length(10), Constraint::Length(9)])
            .header(header_row(&["ID", "FUNCTION", "STATE", "CREATED"]))
            .row_highlight_style(highlight(app.panel == Panel::Executions))
            .block(focus(Block::bordered().title(" newest executions "), app.panel == Panel::Executions)),
        executions,
        &mut state,
    );
    let rows: Vec<Row> = s
        .letters
        .iter()
        .map(|l| {
            Row::new(vec![
                l.id.to_string(),
                l.execution_id.to_string(),
                l.function.clone(),
                human::ago(l.failed_ms),
                // The message first: the column is narrow, `show` has the whole error.
                match &l.error.code {
                    Some(code) => format!("[{code}] {}", l.error.message),
                    None => l.error.message.clone(),
                },
            ])
        })
        .collect();
    let mut state = TableState::default().with_selected(app.selected_letter);
    frame.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Length(5),
                Constraint::Length(9),
                Constraint::Length(14),
                Constraint::Length(9),
                Constraint::Min(10),
            ],
        )
        .header(header_row(&["ID", "EXECUTION", "FUNCTION", "FAILED", "ERROR"]))
        .row_highlight_style(highlight(app.panel == Panel::DeadLetters))
        .block(focus(
            Block::bordered().title(format!(" dead letters: {} (r replay, d discard) ", s.dead_letters)),
            app.panel == Panel::DeadLetters,
        )),
        letters,
        &mut state,
    );
    frame.render_widget(Paragraph::new(app.status.as_str()).style(Style::new().add_modifier(Modifier::DIM)), footer);

    if let Some(detail) = &app.detail {
        let area = centered(frame.area());
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(detail_lines(detail))
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(format!(" execution {} (esc closes) ", detail.info.id))),
            area,
        );
    }
}

fn detail_lines(detail: &super::app::Detail) -> Vec<Line<'static>> {
    let e = &detail.info;
    let mut lines = vec![
        Line::from(vec![Span::raw("function   "), Span::raw(e.function.clone())]),
        Line::from(vec![Span::raw("state      "), Span::styled(e.state.as_str(), style_of(e.state))]),
        Line::from(format!("queue      {} (priority {})", e.queue, e.priority)),
        Line::from(format!("created    {} ({})", views::time(e.created_ms), human::ago(e.created_ms))),
        Line::from(format!("attempts   {}", e.attempts)),
        Line::from(format!("input      {}", human::clip(&e.input.to_string(), 200))),
    ];
    if let Some(out) = &e.output {
        lines.push(Line::from(format!("result     {}", human::clip(&out.to_string(), 200))));
    }
    if let Some(err) = &e.error {
        lines.push(Line::from(format!("error      {err}")));
    }
    for a in &e.history {
        lines.push(Line::from(format!("  attempt {} on {}: {}", a.attempt, a.worker, a.error)));
    }
    if !detail.steps.is_empty() {
        lines.push(Line::from("steps"));
        for s in &detail.steps {
            lines.push(Line::from(format!("  {:>4}  {} {}", s.step, s.kind, s.outcome)));
        }
    }
    lines
}

fn header_row(names: &[&'static str]) -> Row<'static> {
    Row::new(names.iter().copied()).style(Style::new().add_modifier(Modifier::BOLD))
}

fn highlight(focused: bool) -> Style {
    if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    }
}

fn focus(block: Block<'_>, focused: bool) -> Block<'_> {
    if focused {
        block.borders(Borders::ALL).border_style(Style::new().fg(Color::Cyan))
    } else {
        block
    }
}

fn style_of(state: ExecutionState) -> Style {
    match state {
        ExecutionState::Completed => Style::new().fg(Color::Green),
        ExecutionState::Failed | ExecutionState::TimedOut => Style::new().fg(Color::Red),
        ExecutionState::Running => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

/// The popup's area: most of the screen, centered.
fn centered(area: Rect) -> Rect {
    let [_, middle, _] =
        Layout::vertical([Constraint::Percentage(10), Constraint::Percentage(80), Constraint::Percentage(10)])
            .areas(area);
    let [_, center, _] =
        Layout::horizontal([Constraint::Percentage(10), Constraint::Percentage(80), Constraint::Percentage(10)])
            .areas(middle);
    center
}
